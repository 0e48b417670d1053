"""privinfer.he"""
