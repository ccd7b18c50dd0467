from sharevault.cli import main

main()
