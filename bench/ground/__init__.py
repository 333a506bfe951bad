"""Ground-level helpers every layer may use: seeded generators and tensor operations (no bench imports)."""
