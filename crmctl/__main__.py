from crmctl.main import main

main()
