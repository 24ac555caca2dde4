"""results.html: one self-contained page of a job (mhtest.plugins.result_html renders it).

page.py renders it with Jinja2 from templates/ (CSS, script and data inline: the page needs
no network); timeline.py turns a multi-host test's workers and its sync record (sync.jsonl)
into the data its timeline is drawn from; testing.py drives a headless Chromium over the
DevTools protocol, for the tests and bench/report.py.
"""
