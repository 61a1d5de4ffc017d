/* Linked with -static by tests/hooks/build.sh: an exec the hook cannot follow. */
#include <stdio.h>

int main(void)
{
	puts("static hello");
	return 0;
}
