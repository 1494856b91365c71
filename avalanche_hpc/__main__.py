from avalanche_hpc.cli.main import main

main()
