"""sharevault: custodian backend for Portal MPC wallet backup shares."""

__version__ = "0.1.0"
