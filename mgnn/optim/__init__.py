"""mgnn.optim"""
