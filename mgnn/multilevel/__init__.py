"""mgnn.multilevel"""
