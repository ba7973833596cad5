"""Running a workload. Read top-down:

  workload.py    run_workload: expand the points, preflight them all, run each in turn
  preflight.py   every check before anything starts (nodes, drivers, ccs, captures,
                 an attached testbed's conditions), all problems at once
  capture.py     the capture-interface syntax, parsed once (by preflight)
  runner.py      PointRun: one point from up/attach to result.json, every stop on
                 one ExitStack
  flows.py       the flows' plans, ports, servers listening or dead
  collectors.py  captures, kernel TCP events and samplers, on one clock t0
  gather.py      afterwards: the tables, result.json's flows and summary
  summary.py     one flow's summary (pure)
  manifest.py    what the run ran on: kernel, tools, links, nodes before and after
  conditions.py  link conditions in force, and an attached testbed's mismatches
  progress.py    the progress line
"""
