"""Stage 1, inputs: what the run was given, as sessions of videos.

In: paths and URLs on the command line, a study manifest, archives. Out: :class:`~fermon.inputs.sessions.Session`
objects (each an ordered list of :class:`~fermon.inputs.sessions.VideoFile`), with their wall-clock placement.

- :mod:`~fermon.inputs.sessions`: what an input is (a video file, a session, what a search found);
- :mod:`~fermon.inputs.discover`: finding videos under folders and URLs, grouping them into sessions;
- :mod:`~fermon.inputs.archives`: zip and tar inputs, unpacked safely into scratch space;
- :mod:`~fermon.inputs.manifest`: a study manifest's rows as sessions with patient ids and start times;
- :mod:`~fermon.inputs.storage`: local paths and fsspec URLs, and the one atomic write every writer uses;
- :mod:`~fermon.inputs.relay`: a loopback HTTP relay so decord can read objects from a store;
- :mod:`~fermon.inputs.containers`: facts read from the container (creation time, codec);
- :mod:`~fermon.inputs.clock`: each video's place on the wall clock.
"""
