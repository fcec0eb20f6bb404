"""Seeded, realistic demo data: the customer graph (``graph``), shared people (``people``), lead files
(``leads``). The same generators feed ``crmctl demo`` and the benchmarks."""
