"""Operations on a deployed project: checks that read Google Cloud, never change it.

Kept apart from the pipelines and the launcher because these modules talk to the control planes
(IAM, Secret Manager, KMS, Cloud Scheduler) that nothing else in the package needs.
"""
