"""Model roles (``synth``, ``detect``): each role's settings, pre- and post-processing and sinks,
looked up by role so that the service itself knows no particular model."""

from hxsched.runtime.service.roles import detect, synth  # noqa: F401 - registers the roles
from hxsched.runtime.service.roles.base import (
    Prepared,
    Role,
    RoleHandler,
    RoleResult,
    SliceContext,
    register,
    role_handler,
    roles_with,
)

__all__ = [
    "Prepared",
    "Role",
    "RoleHandler",
    "RoleResult",
    "SliceContext",
    "register",
    "role_handler",
    "roles_with",
]
