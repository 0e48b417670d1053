"""privinfer.engines"""
