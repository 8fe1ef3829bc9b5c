"""mgnn.data"""
