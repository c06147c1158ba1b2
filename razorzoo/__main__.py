from razorzoo.cli import main

raise SystemExit(main())
