"""Training: the epoch loop teacher and students share (``loop``), the teacher (``teacher``), the students
through a hint set (``student``)."""
