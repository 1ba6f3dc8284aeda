"""The launcher API: authenticate, check the subscription, record the run, launch the job.

Depends on ``beam_pipelines`` (configs, metastore, secrets) but never imports apache_beam: jobs run
in subprocesses (local backend) or on Dataflow.
"""
