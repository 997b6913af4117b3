"""The FOWM algorithm: TD-MPC world model, offline-to-online training and the uncertainty-
regularised MPPI planner. Pure Python + PyTorch, no ROS.
"""
