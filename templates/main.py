"""Flex Template entry point: the whole pipeline lives in the installed beam_pipelines package."""
import logging

from beam_pipelines.pipeline.template import run

if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
