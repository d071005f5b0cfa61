from threadchat.app.cli import main

raise SystemExit(main())
