"""biometrics"""
