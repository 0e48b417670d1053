"""privinfer.net"""
