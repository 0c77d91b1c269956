"""Shipped profiles (data): ``<device>/<model>.yaml``, schema hxsched.profile/1.

Regenerate with ``python -m hxsched.profiles.regenerate`` after changing the cost model.
"""
