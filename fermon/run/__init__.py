"""Stage 6, the run: sessions in, one Parquet timeline per session and a ledger out.

- :mod:`~fermon.run.options`: the run's options and the models they resolve to (and their fingerprint);
- :mod:`~fermon.run.process`: ``fermon process``: what to do, what is up to date, the run's summary;
- :mod:`~fermon.run.session`: one session from videos to timeline, on whatever machine runs it;
- :mod:`~fermon.run.models`: the models a worker loads once and shares between sessions;
- :mod:`~fermon.run.runners` and :mod:`~fermon.run.cluster`: in this process, or on a Dask cluster;
- :mod:`~fermon.run.ledger`: what was done, with which fingerprint, and what failed;
- :mod:`~fermon.run.timeline`: the timeline contract and its writer.
"""
