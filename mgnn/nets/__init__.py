"""mgnn.nets"""
