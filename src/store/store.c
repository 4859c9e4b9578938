/* placeholder */ typedef int kr__placeholder_store;
