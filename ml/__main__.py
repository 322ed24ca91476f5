from ml.cli.app import main

main()
