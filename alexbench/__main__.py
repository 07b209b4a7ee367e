from alexbench.cli import main

raise SystemExit(main())
