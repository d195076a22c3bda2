from lossctl import console_main

console_main()
