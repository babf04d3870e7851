"""Stage 4, people: face tracks in, persons (``person_id``) and the patient (``is_target``) out.

- :mod:`~fermon.people.chips`: which faces are good enough to embed, and their aligned chips;
- :mod:`~fermon.people.dlib_format` and :mod:`~fermon.people.dlib_resnet`: dlib's face-recognition
  network, read from its own file and run in torch;
- :mod:`~fermon.people.embedder`: descriptors for chips, collected along each track;
- :mod:`~fermon.people.linking`: tracks joined into persons;
- :mod:`~fermon.people.reference`: the person nearest a reference photo of the patient.

Descriptors stay in memory: nothing here is written to any output.
"""
