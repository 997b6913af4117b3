"""Recorder, rosbag ingestion, offline pretraining and the online trainer node that pushes weights
to the planner.
"""
