"""privinfer.security"""
