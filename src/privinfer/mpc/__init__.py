"""privinfer.mpc"""
