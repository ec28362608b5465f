"""`python -m pipeline.decode ...`: the decode stage's command line."""

from pipeline.decode import main

main()
