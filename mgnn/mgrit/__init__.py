"""mgnn.mgrit"""
