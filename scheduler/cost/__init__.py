"""Costs: work per node, layer groups, target devices, the roofline cost model, contention."""
