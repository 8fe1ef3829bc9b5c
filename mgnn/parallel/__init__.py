"""mgnn.parallel"""
