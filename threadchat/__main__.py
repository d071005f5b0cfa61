from threadchat.cli import main

raise SystemExit(main())
