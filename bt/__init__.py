"""`bt`: binary translation of the guest kernel, as VMware's software VMM did it
(Adams & Agesen, ASPLOS 2006).

Reading order: backend.py (the back end: where the guest runs, every way into
the kernel sent to a translation), translate.py (guest code into translation
units), templates.py (the rewritten sequences, assembled once by keystone),
cache.py (the translation cache: lookup, chaining, the indirect-branch table,
coherence, flush), callouts.py (what the VMM does when translated code calls
out), layout.py (where all of it lives in the VMM window).
"""
