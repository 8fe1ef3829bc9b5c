"""mgnn.dd"""
