"""Autoserv in mhtest: server and client control files, the Autotest object, barriers.

controlfile.py  what a control file is (*.srv, control, *.control), compiling it, the resolver
control.py      running a server control file; how any control file ends (its result)
namespace.py    a server control file's globals; `utils`
job.py          the control files' `job` (run_test, record, parallel_simple)
hosts.py        `hosts`: create_host, SSHHost, LocalHost; a host as a place
autotest.py     the Autotest object: client tests and client control files on hosts
client.py       running a client control file (on its host); its `job`
runner.py       running a control file's tests at places through the dispatcher
nested.py       each test a control file runs: a result of the job of its own
tasks.py        parallel, parallel_simple, subcommand (forked tasks)
barrier.py      Autotest's barrier over mhtest's sync, the run's sync server
names.py        test names → tests (NAME.py, NAME/, --tests-path)
imports.py      `from autotest_lib.server import …` inside control files
runtime.py      what one control file's run shares
errors.py       errors, and the `error` module control files see
"""
