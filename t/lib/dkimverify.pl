#!/usr/bin/perl
# dkimverify.pl: Debian's libmail-dkim-perl (Mail::DKIM::Verifier) checks
# every DKIM-Signature of each message, with DNS answered from a file
# instead of the network (Mail::DKIM::DNS::query replaced).
#
#   perl t/lib/dkimverify.pl DNSFILE MSG...
# DNSFILE: one record a line, "NAME TXT-TEXT". Prints one line per
# signature: "MSG INDEX d=D s=S a=A RESULT" where RESULT is Mail::DKIM's
# (pass, fail, invalid, ...) and, after it, its detail.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

my $dnsfile = shift @ARGV;
my %rec;
open( my $fh, '<', $dnsfile ) or die "$dnsfile: $!";
while (<$fh>) {
    chomp;
    my ( $name, $txt ) = split / /, $_, 2;
    $name =~ s/\.$//;
    $rec{ lc $name } = $txt;
}
close $fh;

{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ( $domain, $type ) = @_;
        my $t = $rec{ lc $domain };
        if ( !defined $t ) {
            $@ = 'NXDOMAIN';
            return ();
        }
        # Net::DNS takes the text as character-strings of at most 255
        my @parts = unpack( '(A255)*', $t );
        return ( Net::DNS::RR->new( name => $domain, type => 'TXT', txtdata => [@parts] ) );
    };
}

for my $path (@ARGV) {
    open( my $m, '<:raw', $path ) or die "$path: $!";
    my $v = Mail::DKIM::Verifier->new();
    my $buf;
    while ( read( $m, $buf, 65536 ) ) {
        $v->PRINT($buf);
    }
    close $m;
    $v->CLOSE();
    my $i = 0;
    for my $sig ( $v->signatures ) {
        printf "%s %d d=%s s=%s a=%s %s %s\n", $path, $i++, $sig->domain // '', $sig->selector // '',
          $sig->algorithm // '', $sig->result // 'none', $sig->result_detail // '';
    }
}
