from ctxdoctor.cli import main

main()
