"""privinfer.models"""
