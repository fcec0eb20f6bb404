"""Exports: consistent tenant snapshots (``snapshot``), their manifest and verification
(``manifest``), and one person's access-request bundle (``contact``)."""
