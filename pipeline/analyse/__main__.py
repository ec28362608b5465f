"""`python -m pipeline.analyse ...`: the analyse stage's command line."""

from pipeline.analyse import main

main()
