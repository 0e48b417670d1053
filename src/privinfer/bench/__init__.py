"""privinfer.bench"""
