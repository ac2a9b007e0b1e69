"""Stress and soak runs with bounded duration (`python -m tools.soak --help`).

    cancel      cancel rounds against an in-process engine on the CPU (cancel.py)
    long-reply  one long scripted reply through the real agent stack (conversations.py)
    soak        bot conversations for a duration while the services' memory, file
                descriptors and threads are sampled (conversations.py, procstat.py)
    all         the three in a row, the last two on one stack (CI runs a short form)

Each prints progress on stderr, a table last, and writes JSON with a verdict per run;
the exit status is non-zero when any verdict fails.
"""
