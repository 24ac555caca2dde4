"""The spool-queue scheduler (Autotest's monitor_queue, start_all_queues and mirror).

    mhtest queue watch /srv/testing/queue/x86_64 /srv/testing/results
    mhtest queue start-all /srv/testing
    mhtest queue mirror --clients mirror_clients /srv/mirror /srv/testing/queue
    mhtest queue status /srv/testing

spool.py      a spool directory: waiting files, atomic claims, failed files, stale claims
machines.py   a queue's machines (.machines, or the spool's own name) as places
scheduler.py  machines busy or free across queues and processes (one job per machine)
resultsdir.py `<results>/<file>[.timestamp]/`, queue.json, what each job ended with
jobs.py       one queued file's jobs: a child process per job (jobproc.py), waited for
watcher.py    the watcher of one spool (monitor_queue), and the log it keeps
status.py     `mhtest queue status`: queues, machines, running and waiting files
mirror.py     new kernel releases → control files queued (wrap.py writes them), email
"""
