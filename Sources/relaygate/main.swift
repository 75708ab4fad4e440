RelaygateCommand.main()
