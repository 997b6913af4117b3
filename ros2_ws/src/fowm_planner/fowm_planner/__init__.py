"""Realtime planner node: observation assembly, uncertainty-regularised MPPI, IK, safety, watchdog
and weight hot-swap.
"""
