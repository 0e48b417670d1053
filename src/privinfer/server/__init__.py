"""privinfer.server"""
