from prefsynth.cli import main

main()
