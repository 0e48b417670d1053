"""privinfer.tee"""
